output "queue_urls" {
  description = "Queue URLs by contract key."
  value       = module.queues.urls
}

output "archive_bucket" {
  description = "Archive bucket (VPP_ARCHIVE_S3_BUCKET)."
  value       = module.archive.bucket
}

output "database_address" {
  description = "Host name of PostgreSQL."
  value       = module.database.address
}

output "database_url_secret_arn" {
  description = "ARN of the DATABASE_URL secret."
  value       = module.database.database_url_secret_arn
}

output "temporal_secret_arn" {
  description = "ARN of the Temporal secret: put the mTLS certificate and key in it (README)."
  value       = module.secrets.temporal_secret_arn
}

output "task_role_arns" {
  description = "Task role of each service."
  value       = { for name, service in module.service : name => service.task_role_arn }
}

output "log_groups" {
  description = "Log group of each service."
  value       = { for name, service in module.service : name => service.log_group }
}

output "cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.this.name
}

output "public_dns_name" {
  description = "DNS name of the public TLS entry (null without one)."
  value       = length(aws_lb.public) == 0 ? null : aws_lb.public[0].dns_name
}
