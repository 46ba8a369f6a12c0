from patterns_server.cli import main

main()
