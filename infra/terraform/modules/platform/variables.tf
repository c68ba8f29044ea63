variable "contract" {
  description = "The deployment contract: jsondecode(file(\"contract.json\")) written by `python -m stack.deployment`."
  type        = any
}

variable "image" {
  description = "Container image of the platform, e.g. <account>.dkr.ecr.<region>.amazonaws.com/openvpp:<tag>."
  type        = string
}

variable "image_repository_arn" {
  description = "ARN of the ECR repository holding the image."
  type        = string
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64, as the image is built."
  type        = string
  default     = "X86_64"
}

variable "vpc_cidr_block" {
  description = "CIDR block of the environment's VPC."
  type        = string
}

variable "availability_zone_suffixes" {
  description = "Availability zones to span, as letters after the contract's region (\"a\" -> ap-southeast-2a)."
  type        = list(string)
  default     = ["a", "b"]
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per availability zone (true) or one shared (false)."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Retention of every CloudWatch log group (days)."
  type        = number
  default     = 365
}

variable "alarm_emails" {
  description = "Addresses subscribed to the alarm topic (each confirms by email)."
  type        = list(string)
  default     = []
}

variable "temporal_address" {
  description = "Temporal frontend host:port (Temporal Cloud namespace endpoint or a self-hosted frontend)."
  type        = string
}

variable "temporal_mtls" {
  description = "Pass the mTLS client certificate and key of the Temporal secret to the Temporal clients."
  type        = bool
  default     = true
}

variable "temporal_cidrs" {
  description = "Where the Temporal frontend is (Temporal Cloud: 0.0.0.0/0; self-hosted: its subnets)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "temporal_port" {
  description = "Port of the Temporal frontend."
  type        = number
  default     = 7233
}

variable "database_instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "database_multi_az" {
  description = "Run a standby in a second availability zone."
  type        = bool
}

variable "database_backup_retention_days" {
  description = "Days of automated backups (1 to 35)."
  type        = number
}

variable "database_deletion_protection" {
  description = "Refuse to delete the database and the public load balancer."
  type        = bool
  default     = true
}

variable "archive_infrequent_access_after_days" {
  description = "Days after which archived objects move to Standard-IA."
  type        = number
  default     = 30
}

variable "archive_glacier_after_days" {
  description = "Days after which archived objects move to Glacier Instant Retrieval."
  type        = number
  default     = 180
}

variable "default_cpu" {
  description = "Task CPU units of a service without an entry in service_cpu."
  type        = number
  default     = 512
}

variable "default_memory" {
  description = "Task memory (MiB) of a service without an entry in service_memory."
  type        = number
  default     = 1024
}

variable "service_cpu" {
  description = "Task CPU units by contract service name."
  type        = map(number)
  default     = {}
}

variable "service_memory" {
  description = "Task memory (MiB) by contract service name."
  type        = map(number)
  default     = {}
}

variable "service_min_count" {
  description = "Fewest tasks by contract service name (the autoscaled pools' floor; default 1)."
  type        = map(number)
  default     = {}
}

variable "service_max_count" {
  description = "Most tasks of the autoscaled pools by contract service name (default 4)."
  type        = map(number)
  default     = {}
}

variable "public_certificate_arn" {
  description = "ACM certificate of the public TLS entry of the contract's public services (null: no public entry)."
  type        = string
  default     = null
}

variable "public_allowed_cidrs" {
  description = "Client networks allowed to reach the public entry."
  type        = list(string)
  default     = []
}
