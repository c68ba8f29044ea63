output "arns" {
  description = "Queue ARNs by contract key."
  value       = { for key, queue in local.all_queues : key => queue.arn }
}

output "names" {
  description = "Queue names by contract key."
  value       = { for key, queue in local.all_queues : key => queue.name }
}

output "urls" {
  description = "Queue URLs by contract key."
  value       = { for key, queue in local.all_queues : key => queue.url }
}
