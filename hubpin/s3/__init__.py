"""Amazon S3 and S3-compatible stores (MinIO, Ceph, R2): the ``s3`` extra (boto3)."""
