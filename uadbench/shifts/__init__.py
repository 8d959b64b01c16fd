"""Shifts applied to evaluation images: the registry face and the simple curves (:mod:`.base`), MRI
artefacts from MONAI (:mod:`.artefacts`), re-acquisition under another protocol
(:mod:`.acquisition`), and severities calibrated to one similarity scale (:mod:`.calibration`, with
the shipped table ``levels.json``).

Imports nothing on its own: ``from uadbench.shifts.base import shifted_image``.
"""
