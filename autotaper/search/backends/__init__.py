"""Where a search's trials run: `optuna` (processes on this machine), `ray` (a Ray cluster, through
Ray Tune: `_tune`), over one `_base.Backend`."""
