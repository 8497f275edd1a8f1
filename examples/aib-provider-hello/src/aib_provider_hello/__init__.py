"""An example third-party provider: a ``Motd`` step and a ``Folder`` target."""
