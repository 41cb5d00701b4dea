"""System: builds every service once and hands them to routes, pages and the CLI.

No module-level singletons: a test builds its own System with its own settings.
"""

from __future__ import annotations

import logging

from .database import create_db_engine, migrate
from .events import EventBus
from .jobs import JobService
from .media import media_store_for
from .pipeline import Pipeline
from .providers.registry import ProviderRegistry
from .runner import JobRunner
from .settings import Settings
from .store import JobStore

log = logging.getLogger(__name__)


class System:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = create_db_engine(self.settings.resolved_database_url)
        self.store = JobStore(self.engine)
        self.bus = EventBus()
        self.media = media_store_for(self.settings)
        self.providers = ProviderRegistry(self.settings)
        self.pipeline = Pipeline(self.store, self.bus, self.media, self.providers)
        self.runner = JobRunner(self.pipeline, self.settings)
        self.jobs = JobService(self.store, self.runner, self.providers, self.bus, self.media)

    def migrate(self) -> None:
        migrate(self.engine)

    async def start(self) -> None:
        """Migrate the schema, then pick up the jobs the last process left unfinished."""
        self.migrate()
        self.runner.adopts_orphans = True  # jobs of a process that died are taken over once it misses its beats
        self.runner.start_heartbeat()
        resumed = self.runner.resume_unfinished()
        if resumed:
            log.info("resumed %d unfinished job(s)", len(resumed))

    async def stop(self) -> None:
        await self.runner.shutdown()
        self.bus.close()
        self.engine.dispose()
