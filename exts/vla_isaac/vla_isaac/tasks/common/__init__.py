"""Pieces shared by the cube tasks: the table scene and the Franka set-up."""
