"""Test models wasinn makes itself, without network: shared by the tests and ``wasinn bench``."""
