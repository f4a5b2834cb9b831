from wasinn.cli import main

main(prog_name="wasinn")
