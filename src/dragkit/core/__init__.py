"""The core: what every layer above shares and nothing below exists for. Types (request, result, points), geometry
(image pixels ↔ supervision grid, patches, sub-pixel sampling), the drag loop and the protocols of its parts, the
parameter registry, errors and limits. It imports nothing else from dragkit."""

__version__ = "0.1.0"
