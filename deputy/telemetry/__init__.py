"""What an operator sees of a running Deputy: metrics (:mod:`.metrics`), traces (:mod:`.tracing`) and logs
(:mod:`.logs`), configured by :mod:`.settings`."""
