"""Every benchmark and load tool: ``wasinn bench`` cases (``cases``, ``component``, ``ggml``,
``serve``), their report, and the serving load test and soak (``loadtest``, ``soak``).

The top of the stack, beside ``cli`` and ``serve``: nothing below imports it.
"""
