output "queue_urls" {
  description = "Queue URLs by contract key."
  value       = module.platform.queue_urls
}

output "archive_bucket" {
  description = "Archive bucket."
  value       = module.platform.archive_bucket
}

output "database_url_secret_arn" {
  description = "ARN of the DATABASE_URL secret."
  value       = module.platform.database_url_secret_arn
}

output "temporal_secret_arn" {
  description = "ARN of the Temporal secret (put the mTLS certificate and key in it)."
  value       = module.platform.temporal_secret_arn
}

output "task_role_arns" {
  description = "Task role of each service."
  value       = module.platform.task_role_arns
}

output "log_groups" {
  description = "Log group of each service."
  value       = module.platform.log_groups
}

output "cluster_name" {
  description = "ECS cluster."
  value       = module.platform.cluster_name
}

output "public_dns_name" {
  description = "DNS name of the fleet gateway's TLS entry."
  value       = module.platform.public_dns_name
}
