"""The intervention study: remove an attribute inside the forward pass and see what the network and its job do."""
