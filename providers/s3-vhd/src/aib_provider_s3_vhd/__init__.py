"""aib-sdk provider: publish images to S3 buckets in several regions at once, and boot from images in S3.

Distributors: AIB's ``VHD`` when its ``uri`` is ``s3://bucket/key``, and ``S3Image`` (several regions, a choice of
format). Source: ``S3Image`` (a digest-verified, cached, ranged concurrent download). Nothing here imports
botocore or aioboto3 at import time.
"""
