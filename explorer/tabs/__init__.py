"""One module per tab: its handlers (one method per event, results as named tuples), its
result types and its layout (``build``), which registers the events that stay inside it."""
