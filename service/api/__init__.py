"""HTTP routes: parse, delegate, render. The work is done in plain modules below."""
