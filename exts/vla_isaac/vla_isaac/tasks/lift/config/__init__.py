"""Robot configurations of Lift-Cube."""
