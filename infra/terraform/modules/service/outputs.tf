output "task_role_arn" {
  description = "ARN of the service's task role."
  value       = aws_iam_role.task.arn
}

output "security_group_id" {
  description = "Security group of the service's tasks."
  value       = aws_security_group.this.id
}

output "log_group" {
  description = "CloudWatch log group of the service."
  value       = aws_cloudwatch_log_group.this.name
}
