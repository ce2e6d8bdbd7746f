"""Jobs: the three output types, their models and the one service that holds the rules."""
