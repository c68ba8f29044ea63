output "bucket" {
  description = "Name of the archive bucket (VPP_ARCHIVE_S3_BUCKET)."
  value       = aws_s3_bucket.archive.id
}

output "bucket_arn" {
  description = "ARN of the archive bucket."
  value       = aws_s3_bucket.archive.arn
}

output "log_bucket" {
  description = "Name of the access-log bucket (load balancer logs go under lb/)."
  value       = aws_s3_bucket.logs.id
}
