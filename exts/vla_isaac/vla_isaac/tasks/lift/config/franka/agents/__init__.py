"""Agent configurations of the Franka Lift-Cube tasks (rsl-rl PPO)."""
