package dev.qwenedge.demo

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.viewModels
import androidx.compose.foundation.clickable
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Slider
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.font.FontStyle
import androidx.compose.ui.unit.dp

class MainActivity : ComponentActivity() {
    private val chat: ChatViewModel by viewModels()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent { MaterialTheme { ChatScreen(chat) } }
    }
}

/** Budget slider positions: 0 (no thinking) .. 512 tokens, and the last stop means unlimited. */
private val BUDGETS = listOf(0, 16, 32, 64, 128, 256, 512, null)

@Composable
fun ChatScreen(chat: ChatViewModel) {
    LaunchedEffect(Unit) { chat.refresh() }
    var input by remember { mutableStateOf("What is 4821 - 9377?") }
    Column(Modifier.fillMaxSize().padding(12.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        if (chat.selected == null) {
            Text("Bundles (python -m exporter deploy --bundle DIR --android android-demo)",
                style = MaterialTheme.typography.titleSmall)
            if (chat.bundles.isEmpty()) Text("none found in ${Bundles.root(androidx.compose.ui.platform.LocalContext.current)}")
            chat.bundles.forEach { b ->
                Card(Modifier.fillMaxWidth().clickable { chat.select(b) }) {
                    Column(Modifier.padding(8.dp)) {
                        Text(b.name)
                        Text(if (b.usable) "${b.manifest!!.target} ${b.manifest.quant}, context ${b.manifest.maxSeqLen}"
                             else b.problems.joinToString("; "), style = MaterialTheme.typography.bodySmall)
                    }
                }
            }
            Button(onClick = { chat.refresh() }) { Text("Rescan") }
        } else {
            Row(verticalAlignment = Alignment.CenterVertically) {
                Text("Think")
                Switch(checked = chat.thinking, onCheckedChange = { chat.thinking = it })
                Text("  budget ${chat.budget ?: "unlimited"}  Greedy")
                Switch(checked = chat.greedy, onCheckedChange = { chat.greedy = it })
            }
            Slider(value = BUDGETS.indexOf(chat.budget).toFloat(), onValueChange = {
                chat.budget = BUDGETS[it.toInt().coerceIn(0, BUDGETS.size - 1)]
            }, valueRange = 0f..(BUDGETS.size - 1).toFloat(), steps = BUDGETS.size - 2, enabled = chat.thinking)
            LazyColumn(Modifier.weight(1f), verticalArrangement = Arrangement.spacedBy(6.dp)) {
                items(chat.turns) { turn -> TurnView(turn) }
            }
            chat.error?.let { Text(it, color = MaterialTheme.colorScheme.error) }
            OutlinedTextField(value = input, onValueChange = { input = it }, modifier = Modifier.fillMaxWidth())
            Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                Button(enabled = !chat.busy, onClick = { chat.send(input) }) { Text("Send") }
                Button(enabled = !chat.busy, onClick = { chat.exportEnergy() }) { Text("Export energy") }
                Button(enabled = !chat.busy, onClick = { chat.checkBundle() }) { Text("Check bundle") }
            }
            chat.bundleCheck?.let { Text(it, style = MaterialTheme.typography.bodySmall) }
            chat.lastEnergyFile?.let { Text("energy record: $it", style = MaterialTheme.typography.bodySmall) }
        }
    }
}

@Composable
fun TurnView(turn: Turn) {
    var open by remember { mutableStateOf(false) }
    Column {
        Text(turn.question, style = MaterialTheme.typography.titleSmall)
        if (turn.reasoning.isNotEmpty()) {
            Text((if (open) "▾ reasoning" else "▸ reasoning") + if (turn.cutByBudget) " (cut by the budget)" else "",
                modifier = Modifier.clickable { open = !open }, style = MaterialTheme.typography.labelMedium)
            if (open) Text(turn.reasoning, fontStyle = FontStyle.Italic, style = MaterialTheme.typography.bodySmall)
        }
        Text(turn.answer)
        turn.toolCalls.forEach { Text("tool call: $it", style = MaterialTheme.typography.bodySmall) }
        Text(turn.stats, style = MaterialTheme.typography.labelSmall)
    }
}
