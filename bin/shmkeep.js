#!/usr/bin/env node
'use strict'
// Without a USR1 listener Node starts its inspector on SIGUSR1; `shmkeep run`
// forwards USR1 to the app instead, so a listener goes in before anything else.
process.on('SIGUSR1', () => {})
// `shmkeep ls | head`: a closed pipe ends the output, not with a stack trace.
process.stdout.on('error', (e) => process.exit(e.code === 'EPIPE' ? 0 : 1))
// Exit as soon as the command is done (pipes and files are written
// synchronously on Linux, so nothing printed is lost).
require('../dist/cli/main.js').main(process.argv.slice(2)).then(() => process.exit())
