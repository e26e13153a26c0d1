"""Universe runs: many symbols in one walk-forward, pooled models, and a portfolio across them."""
