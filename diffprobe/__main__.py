from diffprobe.cli import main

main()
