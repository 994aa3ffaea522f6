"""The change feed: what changed in the graph, in an order a follower can trust."""
