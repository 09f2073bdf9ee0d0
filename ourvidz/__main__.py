from ourvidz.cli import main

main()
