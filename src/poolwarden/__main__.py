from poolwarden.cli import main

main()
