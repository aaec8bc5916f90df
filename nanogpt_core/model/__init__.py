"""What a GPT is here: its shape (config), the contract of every component, the registry of implementations, the
`--use` grammar that picks them, and the assembly that injects the chosen parts into each other."""
