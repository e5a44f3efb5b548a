from moe_unlearn.serving.command import main

main()
