"""Deputy: an authorization gateway for the Model Context Protocol."""
