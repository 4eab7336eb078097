"""The node: put/get pipelines, placement, serving peers (internal; use ``shoal.Node``)."""
