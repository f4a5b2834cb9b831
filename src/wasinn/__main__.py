from wasinn.warm.client import main

main()
