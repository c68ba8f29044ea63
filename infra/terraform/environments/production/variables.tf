variable "image" {
  description = "Container image of the platform, e.g. <account>.dkr.ecr.<region>.amazonaws.com/openvpp:<tag>."
  type        = string
}

variable "image_repository_arn" {
  description = "ARN of the ECR repository holding the image."
  type        = string
}

variable "temporal_address" {
  description = "Temporal frontend host:port (Temporal Cloud: <namespace>.<account>.tmprl.cloud:7233)."
  type        = string
}

variable "temporal_mtls" {
  description = "Pass the Temporal secret's mTLS client certificate and key to the Temporal clients."
  type        = bool
  default     = true
}

variable "temporal_cidrs" {
  description = "Where the Temporal frontend is (Temporal Cloud: 0.0.0.0/0; self-hosted: its subnets)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alarm_emails" {
  description = "Addresses notified by the queue alarms."
  type        = list(string)
  default     = []
}

variable "vpc_cidr_block" {
  description = "CIDR block of the VPC."
  type        = string
  default     = "10.50.0.0/16"
}

variable "availability_zone_suffixes" {
  description = "Availability zones to span, as letters after the region."
  type        = list(string)
  default     = ["a", "b"]
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per availability zone."
  type        = bool
  default     = true
}

variable "database_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.m7g.large"
}

variable "database_multi_az" {
  description = "Standby in a second availability zone."
  type        = bool
  default     = true
}

variable "database_backup_retention_days" {
  description = "Days of automated backups."
  type        = number
  default     = 35
}

variable "database_deletion_protection" {
  description = "Refuse to delete the database and the public load balancer."
  type        = bool
  default     = true
}

variable "service_cpu" {
  description = "Task CPU units by contract service name (others: 512)."
  type        = map(number)
  default = {
    "forecast-pool"     = 1024
    "optimisation-pool" = 1024
  }
}

variable "service_memory" {
  description = "Task memory (MiB) by contract service name (others: 1024)."
  type        = map(number)
  default = {
    "market-data"       = 2048
    "bids"              = 2048
    "forecast-pool"     = 2048
    "optimisation-pool" = 2048
  }
}

variable "service_min_count" {
  description = "Fewest tasks by contract service name (default 1)."
  type        = map(number)
  default     = {}
}

variable "service_max_count" {
  description = "Most tasks of the autoscaled pools by contract service name (default 4)."
  type        = map(number)
  default = {
    "forecast-pool"     = 8
    "optimisation-pool" = 8
  }
}

variable "public_certificate_arn" {
  description = "ACM certificate of the fleet gateway's public TLS entry (null: no public entry)."
  type        = string
  default     = null
}

variable "public_allowed_cidrs" {
  description = "Networks of the sites and concentrators allowed to reach the fleet gateway."
  type        = list(string)
  default     = []
}
