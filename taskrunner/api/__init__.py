"""HTTP adapters over the service core: TaskRunner API, kingtask API, native API."""
