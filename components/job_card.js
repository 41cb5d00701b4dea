// One job in the studio's list, drawn in the browser from one prop (`job`, made by JobCard.view in
// job_card.py): a single NiceGUI element per card instead of about fifty, so building, updating
// and re-pointing a card costs the server one element. The markup and classes are those the
// card had as separate NiceGUI elements (rows, labels, Quasar progress bars and buttons).
export default {
  template: `
    <q-card flat role="article" data-testid="job-card" :data-job-id="job.id" :aria-label="'Job: ' + job.prompt.slice(0, 80)">
      <div class="nicegui-row row w-full gap-3 sm:gap-4 no-wrap items-start">
        <a :href="prefixed(job.href)" target="_self" class="nicegui-link pr-thumb pr-plain" :aria-label="'Open job ' + job.id" tabindex="-1">
          <img v-if="job.thumbnail && !thumbnailMissing" :src="job.thumbnail" alt="" loading="lazy" decoding="async"
               data-testid="thumbnail" @error="thumbnailMissing = true">
          <img v-else-if="job.preview" :src="job.preview" alt="Preview while the image is made" data-testid="preview">
          <div v-else class="pr-thumb-empty w-full h-full">
            <q-icon :name="thumbnailMissing ? 'broken_image' : job.thumbnailIcon" size="30px" :class="{ 'animate-pulse': job.unfinished }" />
          </div>
        </a>
        <div class="nicegui-column grow min-w-0 gap-1.5">
          <div class="nicegui-row row w-full items-start justify-between no-wrap gap-2">
            <a :href="prefixed(job.href)" target="_self" class="nicegui-link pr-prompt pr-prompt-link min-w-0"
               :title="job.prompt.slice(0, 300)" data-testid="job-prompt">{{ job.prompt }}</a>
            <div :class="job.statusClasses" data-testid="job-status" role="status">{{ job.statusLabel }}</div>
          </div>
          <div class="nicegui-row row items-center gap-1.5">
            <div class="pr-chip" data-testid="job-provider" :title="job.models">{{ job.providers }}</div>
            <div class="pr-chip gt-xs">{{ job.settings }}</div>
            <div class="pr-chip gt-sm">{{ job.seed }}</div>
            <a v-if="job.batchHref" :href="prefixed(job.batchHref)" target="_self" class="pr-chip pr-plain nicegui-link"
               data-testid="job-batch" aria-label="Open the batch this job belongs to">batch</a>
          </div>
          <div class="nicegui-row row w-full items-center gap-2 no-wrap">
            <q-linear-progress :value="job.progress / 100" size="8px" color="primary" rounded animation-speed="300"
                               class="pr-bar pr-bar-overall grow rounded" aria-label="Overall progress" data-testid="job-progress" />
            <div class="text-xs font-semibold w-10 text-right" data-testid="job-percent">{{ job.progress }}%</div>
          </div>
          <div class="nicegui-row row w-full items-center gap-x-4 gap-y-1">
            <div v-for="step in job.steps" :key="step.id" class="nicegui-row row items-center gap-1.5 no-wrap">
              <div class="pr-step-label">{{ step.title }}</div>
              <q-linear-progress :value="step.progress / 100" size="5px" :color="step.color" rounded animation-speed="300"
                                 class="pr-bar w-16 sm:w-24 rounded" :aria-label="step.name + ' progress'" :data-testid="'step-' + step.id" />
              <div class="pr-step-label w-8">{{ step.progress }}%</div>
            </div>
          </div>
          <div v-if="job.drew" class="text-xs pr-understood" data-testid="job-understood">
            <span class="pr-muted">Drew:</span> {{ job.drew }}<template v-if="job.notUnderstood"> ·
            <span class="pr-muted">Not understood:</span> <span class="font-semibold">{{ job.notUnderstood }}</span>
            <q-icon name="help_outline" size="14px" class="pr-muted" tabindex="0" role="img"
                    aria-label="What the local renderer can draw"><q-tooltip max-width="320px">{{ hint }}</q-tooltip></q-icon></template>
          </div>
          <div v-if="job.error" class="pr-error-text" data-testid="job-error">{{ job.error }}</div>
          <div class="nicegui-row row w-full items-center justify-between gap-2 pt-0.5">
            <div class="nicegui-row row items-center gap-3 text-xs pr-muted">
              <div class="nicegui-row row items-center gap-1 no-wrap">
                <q-icon name="timer" size="15px" />
                <div data-testid="job-elapsed" :data-elapsed-from="job.elapsedFrom" :data-elapsed-to="job.elapsedTo">{{ job.elapsed }}</div>
              </div>
              <div class="nicegui-row row items-center gap-1 no-wrap">
                <q-icon name="payments" size="15px" />
                <div data-testid="job-cost">{{ job.cost }}</div>
              </div>
            </div>
            <div class="nicegui-row row pr-actions items-center gap-0.5 no-wrap">
              <q-btn v-if="job.animatable" unelevated dense no-caps icon="movie_filter" color="primary" label="Animate this one"
                     class="px-2" data-testid="animate" @click="$emit('action', 'animate')"><q-tooltip>Make the video of this image (a new job)</q-tooltip></q-btn>
              <q-btn v-if="job.unfinished" flat round dense icon="stop_circle" color="negative" aria-label="Cancel job"
                     data-testid="cancel" @click="$emit('action', 'cancel')"><q-tooltip>Cancel job</q-tooltip></q-btn>
              <q-btn flat round dense icon="open_in_new" class="pr-icon-btn" aria-label="Open job page" data-testid="open"
                     :href="prefixed(job.href)" target="_self"><q-tooltip>Open job page</q-tooltip></q-btn>
              <q-btn flat round dense icon="image" class="pr-icon-btn" aria-label="Download image" data-testid="download-image"
                     :href="job.image || undefined" :disable="!job.image || thumbnailMissing" download><q-tooltip>Download image</q-tooltip></q-btn>
              <q-btn flat round dense icon="movie" class="pr-icon-btn" aria-label="Download video" data-testid="download-video"
                     :href="job.video || undefined" :disable="!job.video" download><q-tooltip>Download video</q-tooltip></q-btn>
              <q-btn flat round dense icon="replay" class="pr-icon-btn" aria-label="Run again with the same settings"
                     data-testid="rerun" @click="$emit('action', 'rerun')"><q-tooltip>Run again with the same settings</q-tooltip></q-btn>
              <q-btn flat round dense icon="tune" class="pr-icon-btn" aria-label="Edit these settings in the form"
                     data-testid="prefill" @click="$emit('action', 'prefill')"><q-tooltip>Edit these settings in the form</q-tooltip></q-btn>
              <q-btn flat round dense icon="delete_outline" class="pr-icon-btn" aria-label="Remove from history"
                     data-testid="remove" @click="$emit('action', 'remove')"><q-tooltip>Remove from history</q-tooltip></q-btn>
            </div>
          </div>
        </div>
      </div>
    </q-card>
  `,
  props: {
    job: Object,
    hint: String,
  },
  data() {
    return { thumbnailMissing: false };
  },
  watch: {
    // a card re-pointed at another job, or a job whose image came: try the new picture
    "job.thumbnail"() {
      this.thumbnailMissing = false;
    },
  },
  methods: {
    prefixed(path) {
      return (window.path_prefix || "") + path;
    },
  },
};
