"""aib-sdk's Azure provider: VHD page blobs, managed images and gallery image versions through ARM REST over httpx."""

from aib_provider_azure.credentials import StaticTokenCredential

__all__ = ["StaticTokenCredential"]
