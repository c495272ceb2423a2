"""Robot configurations of Stack-Cube."""
