"""Two network namespaces joined by a veth pair, for the multi-node (Ray) tests: see netns.py."""
