from finch.cli import main

main()
