from effreason_agents.cli import main

main()
