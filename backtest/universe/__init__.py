"""Universe runs: many symbols in one walk-forward (per-symbol or pooled models) and a portfolio across them."""
