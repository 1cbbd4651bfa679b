"""MuJoCo ALOHA simulation (gym-aloha's models and tasks) without ROS: the sim node and
the scripted expert build on these classes."""
