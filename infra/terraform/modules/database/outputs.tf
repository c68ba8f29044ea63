output "security_group_id" {
  description = "Security group of the database (services get ingress rules on it)."
  value       = aws_security_group.this.id
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "address" {
  description = "Host name of the instance."
  value       = aws_db_instance.this.address
}

output "database_url_secret_arn" {
  description = "ARN of the DATABASE_URL secret."
  value       = aws_secretsmanager_secret.database_url.arn
}
