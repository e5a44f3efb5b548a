from moe_unlearn.cli import main

main()
