"""magicanimate: from a raw video to a MagicAnimate human-image animation."""

__version__ = "0.1.0"
