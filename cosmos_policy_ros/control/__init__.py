"""From observation to joint commands, without ROS: observation assembly, image decoding,
policies (scripted, replay, Cosmos), best-of-N planning, chunk execution, safety limits and
the output adapters that turn commands into controller messages."""
