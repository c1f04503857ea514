"""One module per mediated resource, all the same shape: build the operation, decide,
record, act. Only the act step touches the host."""
