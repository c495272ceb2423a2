"""Robot configurations of Lift-Cube-Color."""
