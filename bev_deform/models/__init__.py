"""bev_deform's models; importing this package registers every model class in
``bev_deform.registry`` (the registries' ``locations`` point here)."""

from . import attention, detectors, heads, layers, necks, task_modules  # noqa: F401
