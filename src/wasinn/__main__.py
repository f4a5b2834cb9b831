from wasinn.cli import main

main()
