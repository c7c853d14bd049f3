"""Pure scaling policies of the Quart gateway plugin: metrics in, decisions out, no I/O."""
