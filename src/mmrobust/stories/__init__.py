"""The demo's stories (the demo wing): each story generates its synthetic world, attacks, defends and measures
a tiny model end to end (``mmrobust demo``), over one or several seeds. Above :mod:`mmrobust.pipelines`,
which they call like any user would; nothing below imports them."""
