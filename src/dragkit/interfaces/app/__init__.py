"""The web app (``dragkit app``): plain handler functions (:mod:`.session`, :mod:`.runner`) under a Gradio page
(:mod:`.ui`). The handlers hold no global state about users: each browser session carries its own
:class:`~dragkit.interfaces.app.session.Session`; only loaded models are shared."""
